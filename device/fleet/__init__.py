"""Fleet reporting and remote control over MQTT (DESIGN: MQTT (fleet); docs/MQTT.md is the contract).

reporter.py is what the daemon uses (FleetReporter); outbox.py makes events durable; commands.py checks
and runs remote commands; topics.py and payloads.py are the wire contract shared with
`edgesort fleet watch|cmd`.
"""
