"""Test-side support for ``callback-gateway bench`` (the bench itself lives in ``tooling.bench``)."""
