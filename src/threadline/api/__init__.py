"""HTTP only: routes parse, call one service method, and render. One module per resource."""
