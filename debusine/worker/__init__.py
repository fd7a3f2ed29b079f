"""
The external worker daemon, `debusine-worker`: it registers with a server, stays connected to
its worker websocket, and runs the work requests the server assigns to it. No Django here.
"""
