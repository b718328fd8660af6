"""A device app in under 30 lines: watch a folder for request files, write images.

Drop `req1.json` containing {"class": 3, "seed": 7, "steps": 8} into INBOX; the app writes
`req1.png` to OUTBOX and removes the request.  Usage: python watch_folder_app.py BUNDLE INBOX OUTBOX BOARD [--once]
"""
import json
import sys
import time
from pathlib import Path

import edge_sdk

bundle, inbox, outbox, board = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
gen = edge_sdk.load(bundle, board=board)  # verified, planned for the board, under its cap; sessions built once
outbox.mkdir(parents=True, exist_ok=True)
while True:
    for req in sorted(inbox.glob("*.json")):
        try:
            r = json.loads(req.read_text())
            result = gen.generate(class_labels=[int(r.get("class", 0))], seed=int(r.get("seed", 0)),
                                  steps=r.get("steps"))
            result.save(outbox / f"{req.stem}.png")
        except (edge_sdk.EdgeSDKError, ValueError) as e:  # a bad request must not stop the service
            (outbox / f"{req.stem}.error.txt").write_text(str(e))
        req.unlink()
    if "--once" in sys.argv:
        break
    time.sleep(0.2)
