"""Pure logic: entities, the run state machine, services and the run loop. No web or SQL code here."""
