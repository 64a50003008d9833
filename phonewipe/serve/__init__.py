"""`phonewipe serve`: the facility's read-only live dashboard (Starlette on uvicorn), over
the store's read side (erase/store)."""
