onlychat-loadgen --peer socketio --url ws://127.0.0.1:38080 --label socketio --duration 30s reconnect-storm --clients 2000
