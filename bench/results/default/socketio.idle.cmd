onlychat-loadgen --peer socketio --url ws://127.0.0.1:38080 --label socketio --duration 5s idle --connections 5000
