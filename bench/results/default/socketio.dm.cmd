onlychat-loadgen --peer socketio --url ws://127.0.0.1:38080 --label socketio --duration 10s dm --pairs 500 --rate 1000
