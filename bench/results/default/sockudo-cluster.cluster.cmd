onlychat-loadgen --peer pusher --url ws://127.0.0.1:38080,ws://127.0.0.1:38081 --label sockudo-cluster --duration 10s broadcast --rooms 100 --members 20 --rate 1000
