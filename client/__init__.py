"""A federation node: the Flower ClientApp, its message handlers and the forget-request service."""
