"""The wire models of every protocol rewardcal speaks, defined once: the server validates
requests with them and the OpenAPI spec is generated from them. pydantic only."""
