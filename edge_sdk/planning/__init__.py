"""Planning: board profiles, the memory model and the planner that turns (bundle, board, request)
into a Plan that fits the board's cap; tuned plans written by `edge-sdk tune`."""
