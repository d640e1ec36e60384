"""The request path, one stage per module, in the order a request goes through them:

validate (the wire schemas of rewardcal_client.protocol) -> :mod:`admission` (one permit per
request, 503 at once when full) -> :mod:`tokenize` (a pool of tokenizer workers, batched
encodes; model artifacts from :mod:`artifacts`) -> batch (:mod:`rewardcal.scheduler`, only
for backends that pad) -> score (the backend) -> calibrate -> respond (the routes).
:mod:`rewardcal.scoring` runs the stages for one request.
"""
