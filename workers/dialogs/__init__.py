"""The worker's side of dialogs (the table itself is ``dialogstate/``, shared with the state
plane): the CDR file, profile counts shared between workers and their limits, dialog deltas to
the state plane, and the hand-over of dialogs when the worker set changes."""
