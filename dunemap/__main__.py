"""Allow ``python -m dunemap`` (used by torchrun)."""

from dunemap.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
