"""A strawberry-graphql project: a query over HTTP, a subscription over graphql-transport-ws."""
