"""``python -m padam_compare compare ...`` is ``padam compare ...``."""

from padam_compare.cli import main

raise SystemExit(main())
