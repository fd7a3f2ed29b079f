"""
The life of a work request, in one place.

- `transitions`: every change of a work request's state (create, assign, start, complete,
  abort, retry/supersede, unblock, requeue, re-prioritise), each defined once, with its SQL
  fast path beside it where the worker's hot path needs one;
- `serialization`: the one WorkRequest wire object (`protocol.work_requests.WorkRequestResponse`),
  from a model instance or from a row of the fast paths;
- `worker_tokens`: the one resolver of a worker token to its worker;
- `effects`: what happens after a transition commits (a scheduling pass, a worker told, a
  completion announced), registered here and provided by the scheduler at start-up;
- `notifications`: the messages to worker websockets and `on-completed` listeners.

The database models (`debusine.server.db.models`) hold the rows and their queries; they import
nothing from here, so that this package, the scheduler, lookups and collections build on them
without import cycles.
"""
