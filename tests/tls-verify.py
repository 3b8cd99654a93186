# Python's ssl as a slicer's verifier: the chain must lead to CAFILE and the name must be the printer's serial.
# usage: tls-verify.py handshake HOST PORT SERIAL CAFILE
#        tls-verify.py ftps HOST PORT SERIAL CAFILE USER PASSWORD   (implicit FTPS; LIST over a verified data connection)
# Prints "verified" and exits 0, or prints the error and exits 1.
import ftplib, socket, ssl, sys

mode, host, port, serial, cafile = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=cafile)  # check_hostname and CERT_REQUIRED are the defaults
ctx.maximum_version = ssl.TLSVersion.TLSv1_2 if mode == "ftps" else ssl.TLSVersion.MAXIMUM_SUPPORTED

class VerifiedImplicitFtps(ftplib.FTP_TLS):
    """Implicit FTPS whose control and data connections are both checked against the serial."""
    def connect(self, host, port, timeout=10):
        self.host, self.port = host, port
        raw = socket.create_connection((host, port), timeout)
        self.sock = self.context.wrap_socket(raw, server_hostname=serial)
        self.af = self.sock.family
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        return self.context.wrap_socket(conn, server_hostname=serial, session=self.sock.session), size

try:
    if mode == "handshake":
        with socket.create_connection((host, int(port)), 10) as raw:
            with ctx.wrap_socket(raw, server_hostname=serial) as tls:
                tls.version()
    elif mode == "ftps":
        user, password = sys.argv[6:8]
        ftp = VerifiedImplicitFtps(context=ctx, timeout=10)
        ftp.connect(host, int(port))
        ftp.login(user, password)
        ftp.prot_p()
        ftp.retrlines("LIST", lambda line: None)
        ftp.quit()
    else:
        raise SystemExit(f"unknown mode {mode}")
    print("verified")
except (ssl.SSLError, ssl.CertificateError, OSError, ftplib.Error) as error:
    print(f"refused: {error}")
    sys.exit(1)
