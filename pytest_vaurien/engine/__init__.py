"""The engine: every line of gevent code that relays bytes.

``proxy`` runs the thread, the hub and the listener; ``connection`` relays one
accepted connection, asking the fault plan which chain each unit gets;
``upstream`` connects to the distant; ``endpoint`` is one side's socket;
``chain`` runs handlers in order; ``fastpath`` moves untouched bytes in the
loop's own callbacks. Imports go one way, from ``proxy`` down.
"""
