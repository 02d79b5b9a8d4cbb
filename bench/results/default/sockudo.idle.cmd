onlychat-loadgen --peer pusher --url ws://127.0.0.1:38080 --label sockudo --duration 5s idle --connections 5000
