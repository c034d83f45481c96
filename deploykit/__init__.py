"""deploykit: pyinfra components, operations and the rolling-deploy engine.

Deploy files under ``deploys/`` import this package; it never imports them.
"""
