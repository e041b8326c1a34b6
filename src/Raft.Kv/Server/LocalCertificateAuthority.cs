using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Raft.Kv.Server;

/// <summary>
/// A private certificate authority for a local cluster ('raftv up --tls'): its certificate and key
/// as PEM files in a folder, and certificates it issues for members (good for serving and for
/// dialling, so one certificate serves a member's peer and client endpoints). Keys are written
/// readable by their owner only. Nothing here is meant for a production PKI.
/// </summary>
public sealed class LocalCertificateAuthority : IDisposable
{
    private readonly X509Certificate2 _certificate;
    private readonly ECDsa _key;

    private LocalCertificateAuthority(string directory, X509Certificate2 certificate, ECDsa key)
    {
        Directory = directory;
        _certificate = certificate;
        _key = key;
    }

    public string Directory { get; }

    /// <summary>The authority's certificate: what peers and clients trust (etcd's --trusted-ca-file, etcdctl's --cacert).</summary>
    public string CertificateFile => Path.Combine(Directory, "ca.pem");

    /// <summary>Creates a new authority in <paramref name="directory"/> (created if missing), valid for <paramref name="validity"/>.</summary>
    public static LocalCertificateAuthority Create(string directory, string name = "raftv local CA", TimeSpan? validity = null)
    {
        System.IO.Directory.CreateDirectory(directory);
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(new X500DistinguishedName($"CN={name}"), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        var now = DateTimeOffset.UtcNow;
        var certificate = request.CreateSelfSigned(now.AddMinutes(-5), now + (validity ?? TimeSpan.FromDays(365)));
        var authority = new LocalCertificateAuthority(directory, certificate, key);
        File.WriteAllText(authority.CertificateFile, certificate.ExportCertificatePem());
        WritePrivate(Path.Combine(directory, "ca-key.pem"), key.ExportPkcs8PrivateKeyPem());
        return authority;
    }

    /// <summary>
    /// Issues a certificate named <paramref name="name"/> for 127.0.0.1, localhost and
    /// <paramref name="addresses"/>, usable as a server and as a client certificate; writes
    /// NAME.pem and NAME-key.pem and returns them with this authority as the trusted one.
    /// </summary>
    public TlsFiles Issue(string name, bool clientCertAuth, IEnumerable<IPAddress>? addresses = null, TimeSpan? validity = null)
    {
        if (string.IsNullOrWhiteSpace(name) || name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
            throw new ArgumentException($"certificate name '{name}' is not a file name");
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(new X500DistinguishedName($"CN={name}"), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            new OidCollection { new Oid("1.3.6.1.5.5.7.3.1", "serverAuth"), new Oid("1.3.6.1.5.5.7.3.2", "clientAuth") }, false));
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        foreach (var address in new[] { IPAddress.Loopback }.Concat(addresses ?? []).Distinct()) names.AddIpAddress(address);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(_certificate, true, false));
        var serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7F; // a positive serial number
        var now = DateTimeOffset.UtcNow;
        var notAfter = now + (validity ?? TimeSpan.FromDays(365));
        if (notAfter > _certificate.NotAfter) notAfter = _certificate.NotAfter;
        using var certificate = request.Create(_certificate.SubjectName, X509SignatureGenerator.CreateForECDsa(_key), now.AddMinutes(-5), notAfter, serial);
        var certificateFile = Path.Combine(Directory, $"{name}.pem");
        var keyFile = Path.Combine(Directory, $"{name}-key.pem");
        File.WriteAllText(certificateFile, certificate.ExportCertificatePem());
        WritePrivate(keyFile, key.ExportPkcs8PrivateKeyPem());
        return new TlsFiles(certificateFile, keyFile, CertificateFile, clientCertAuth);
    }

    private static void WritePrivate(string path, string text)
    {
        File.WriteAllText(path, "");
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.WriteAllText(path, text);
    }

    public void Dispose()
    {
        _certificate.Dispose();
        _key.Dispose();
    }
}
