"""Events: EventBridge rules over the platform's own events (:mod:`.patterns`, :mod:`.bus`, :mod:`.sagemaker`)."""
