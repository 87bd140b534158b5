"""One module per page of the dashboard, each with `build_router(ctx)`."""
