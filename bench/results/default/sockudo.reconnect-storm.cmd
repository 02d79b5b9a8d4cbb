onlychat-loadgen --peer pusher --url ws://127.0.0.1:38080 --label sockudo --duration 30s reconnect-storm --clients 2000
