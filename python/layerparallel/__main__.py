"""``python -m layerparallel`` is the ``layerparallel`` command."""
from .cli import main

raise SystemExit(main())
