"""The shared core: what ``training``, ``export``, ``service`` and ``loadtest`` all rely on, in one place.

- ``core.run_dir``: the training run directory, written by ``training`` and read by ``export``.
- ``core.jsonl``: the one JSON-lines reader and writer (data cache, eval splits, load-test messages).
- ``core.bundle``: the model bundle format, written by ``export`` and read by ``service``.
- ``core.engine``: the ONNX Runtime engine, served by ``service`` and measured by ``export`` and ``loadtest``.
- ``core.batching``: ``plan_batches`` and the default batch caps the service, the engine and the export's
  measurements share.
- ``core.host``: the machine: usable cores, CPU name and instruction set, a free TCP port.
- ``core.process``: start a server as a child process, wait until it is ready, stop it (``loadtest``,
  ``deploy`` and the tests share it); ``core.service_command``: the command line of ``python -m service``.

The stages import ``core`` and never each other (``tests/unit/test_import_rules.py`` checks it). Nothing here
imports torch or transformers: the serving image copies ``core/``.
"""
