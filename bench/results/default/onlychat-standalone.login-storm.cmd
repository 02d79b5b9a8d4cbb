onlychat-loadgen --peer onlychat --url ws://127.0.0.1:38080 --label onlychat-standalone --duration 60s login-storm --clients 300
