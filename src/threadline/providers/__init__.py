"""The only package that talks to models: adapters that stream our own model events."""
