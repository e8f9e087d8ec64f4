"""git room: dulwich smart-HTTP receiver that deploys pushes."""
