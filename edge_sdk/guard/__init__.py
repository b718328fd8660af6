"""Guards against hostile inputs and faults: no-follow file reads with size caps, bounded numbers and
validated configs, model-file checks, signal handling, supervised children, the memory governor."""
