"""How an encoder's forward pass runs: eager torch, ``torch.compile``, ONNX Runtime; thread counts.

:func:`.select.with_backend` chooses; :mod:`.onnx` and :mod:`.threads` do the work.
"""
