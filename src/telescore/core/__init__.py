"""Pure logic: schemas, features, metrics and policies. Imports no external system client."""
