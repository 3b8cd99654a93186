# A Debian python3-paho-mqtt client for the MQTT interop tests: N clients subscribe to a printer's report topic,
# the first one asks for pushall (QoS 1), and a JSON summary of what each received is printed.
# usage: mqtt-paho-client.py HOST PORT SERIAL ACCESS_CODE CLIENTS WANT_REPORTS
import json
import ssl
import sys
import time

import paho.mqtt.client as paho

host, port, serial, code = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
count, want = int(sys.argv[5]), int(sys.argv[6])
report, request = f"device/{serial}/report", f"device/{serial}/request"
DEADLINE_S = 20

state = [{"connack": None, "reports": 0, "full": False, "reply": False, "puback": False} for _ in range(count)]
clients = []


def make(i):
    c = paho.Client(client_id=f"paho-{i}", protocol=paho.MQTTv311)
    c.username_pw_set("bblp", code)
    c.tls_set(cert_reqs=ssl.CERT_NONE)  # printers (and the proxy) use their own CA
    c.tls_insecure_set(True)

    def on_connect(client, userdata, flags, rc):
        state[i]["connack"] = rc
        if rc == 0:
            client.subscribe(report, qos=0)

    def on_subscribe(client, userdata, mid, granted):
        if i == 0:
            client.publish(request, json.dumps({"pushing": {"sequence_id": "paho-1", "command": "pushall"}}), qos=1)

    def on_publish(client, userdata, mid):
        state[i]["puback"] = True

    def on_message(client, userdata, msg):
        body = json.loads(msg.payload)
        state[i]["reports"] += 1
        p = body.get("print", {})
        if p.get("msg") == 0:
            state[i]["full"] = True
            if p.get("sequence_id") == "paho-1":
                state[i]["reply"] = True

    c.on_connect, c.on_subscribe, c.on_publish, c.on_message = on_connect, on_subscribe, on_publish, on_message
    c.connect_async(host, port, keepalive=30)
    c.loop_start()
    return c


for i in range(count):
    clients.append(make(i))

start = time.time()
def done():
    if any(s["connack"] not in (0,) for s in state):
        return any(s["connack"] not in (None, 0) for s in state)
    return all(s["reports"] >= want for s in state) and state[0]["reply"] and state[0]["puback"]

while time.time() - start < DEADLINE_S and not done():
    time.sleep(0.05)

for c in clients:
    c.disconnect()
    c.loop_stop()
print(json.dumps(state))
sys.exit(0 if done() and all(s["connack"] == 0 for s in state) else 1)
