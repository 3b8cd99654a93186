# Python ftplib over implicit FTPS with the data connection resuming the control session (as Bambu tools do).
# usage: ftp-client.py HOST PORT USER PASSWORD MODE(pasv|port|eprt) REUSE(1|0) put LOCAL REMOTE | get REMOTE LOCAL | nlst
import ftplib, ssl, sys

class ImplicitFtps(ftplib.FTP_TLS):
    def __init__(self, reuse, **kw):
        super().__init__(**kw)
        self._sock = None
        self.reuse = reuse
    @property
    def sock(self):
        return self._sock
    @sock.setter
    def sock(self, value):
        if value is not None and not isinstance(value, ssl.SSLSocket):
            value = self.context.wrap_socket(value)
        self._sock = value
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        session = self.sock.session if self.reuse else None
        try:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        except ssl.SSLError:
            # The server refused the data connection: show why (its next reply, e.g. 522).
            print(self.getline(), file=sys.stderr)
            raise
        return conn, size

host, port, user, password, mode, reuse, action = sys.argv[1:8]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
ftp = ImplicitFtps(reuse == "1", context=ctx, timeout=30)
ftp.connect(host, int(port))
ftp.login(user, password)
ftp.prot_p()
if mode == "port":
    ftp.set_pasv(False)
elif mode == "eprt":
    ftp.set_pasv(False)
    ftp.sendport = ftp.sendeprt
if action == "put":
    with open(sys.argv[8], "rb") as f:
        print(ftp.storbinary("STOR " + sys.argv[9], f))
elif action == "get":
    with open(sys.argv[9], "wb") as f:
        print(ftp.retrbinary("RETR " + sys.argv[8], f.write))
elif action == "nlst":
    print("\n".join(ftp.nlst()))
ftp.quit()
