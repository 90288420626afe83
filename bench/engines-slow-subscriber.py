#!/usr/bin/env python3
# A subscriber that never reads, against Redis pub/sub and NATS core (see
# docs/cluster-engine.md): when does each engine drop it, and what does the
# publisher see? Starts its own redis-server and nats-server on free loopback
# ports, scratch files in /tmp/slow; about 20 s. The last line is a baseline:
# the same NATS publishing with a subscriber that reads.
import socket, subprocess, time, os, sys
def free():
    s=socket.socket(); s.bind(('127.0.0.1',0)); p=s.getsockname()[1]; s.close(); return p
def wait(p):
    for _ in range(100):
        try: socket.create_connection(('127.0.0.1',p),0.2).close(); return
        except OSError: time.sleep(0.05)
os.makedirs("/tmp/slow", exist_ok=True)
payload=b'x'*1000
# Redis
p=free()
r=subprocess.Popen(['redis-server','--port',str(p),'--bind','127.0.0.1','--save','','--appendonly','no','--dir','/tmp/slow'],stdout=subprocess.DEVNULL)
try:
    wait(p)
    sub=socket.create_connection(('127.0.0.1',p)); sub.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sub.sendall(b'*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nchan\r\n'); time.sleep(0.2); sub.recv(100)
    pub=socket.create_connection(('127.0.0.1',p))
    cmd=b'*3\r\n$7\r\nPUBLISH\r\n$4\r\nchan\r\n$1000\r\n'+payload+b'\r\n'
    sent=0; first_zero=None
    f=pub.makefile('rb')
    t=time.time()
    for i in range(60000):
        pub.sendall(cmd); line=f.readline()
        if line.strip()==b':0' and first_zero is None: first_zero=i
        sent+=1
    print('redis: published',sent,'x 1000 B in %.1fs, one round trip each; first PUBLISH that reached 0 receivers:'%(time.time()-t),first_zero, '(~%.1f MB in)'%((first_zero or 0)*1.04/1000))
    pub.sendall(b'*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n'); time.sleep(0.1); info=pub.recv(100000).decode()
    print('redis:', [l for l in info.split('\r\n') if 'client_output' in l or 'evicted_clients' in l or 'pubsub' in l])
finally:
    r.kill(); r.wait()
# NATS
p=free()
n=subprocess.Popen(['nats-server','-a','127.0.0.1','-p',str(p)],stdout=subprocess.DEVNULL,stderr=open('/tmp/slow/nats.log','w'))
try:
    wait(p)
    sub=socket.create_connection(('127.0.0.1',p)); sub.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sub.recv(4096); sub.sendall(b'CONNECT {"verbose":false}\r\nSUB chan 1\r\nPING\r\n'); time.sleep(0.2); sub.recv(100)
    pub=socket.create_connection(('127.0.0.1',p)); pub.recv(4096)
    pub.sendall(b'CONNECT {"verbose":false}\r\n')
    f=pub.makefile('rb')
    t=time.time()
    for i in range(100):
        pub.sendall((b'PUB chan 1000\r\n'+payload+b'\r\n')*1000+b'PING\r\n')
        while True:
            l=f.readline()
            if l.startswith(b'PONG'): break
    print('nats: published 100000 x 1000 B in %.1fs'%(time.time()-t))
    time.sleep(0.5)
    print('nats log:', [l.strip()[:160] for l in open('/tmp/slow/nats.log') if 'low' in l.lower() or 'Slow' in l][:3])
finally:
    n.kill(); n.wait()
# Baseline: the same NATS publish with a subscriber that does read.
import threading
p=free()
n=subprocess.Popen(['nats-server','-a','127.0.0.1','-p',str(p)],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
time.sleep(0.5)
import threading
sub=socket.create_connection(('127.0.0.1',p)); sub.recv(4096); sub.sendall(b'CONNECT {"verbose":false}\r\nSUB chan 1\r\nPING\r\n'); time.sleep(0.2)
got=[0]
def drain():
    while True:
        d=sub.recv(1<<20)
        if not d: break
        got[0]+=len(d)
threading.Thread(target=drain,daemon=True).start()
pub=socket.create_connection(('127.0.0.1',p)); pub.recv(4096); pub.sendall(b'CONNECT {"verbose":false}\r\n')
f=pub.makefile('rb'); payload=b'x'*1000; t=time.time()
for i in range(100):
    pub.sendall((b'PUB chan 1000\r\n'+payload+b'\r\n')*1000+b'PING\r\n')
    while not f.readline().startswith(b'PONG'): pass
print('nats, reading subscriber: 100000 x 1000 B in %.1fs, subscriber got %d MB'%(time.time()-t, got[0]>>20))
n.kill(); n.wait()
