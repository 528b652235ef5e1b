"""A django-channels-graphql-ws project: a graphene subscription fed by a mutation."""
