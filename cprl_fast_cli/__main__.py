"""``python -m cprl_fast_cli``: the cprl-fast command."""

from cprl_fast_cli import main

raise SystemExit(main())
