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

    private string KeyFile => Path.Combine(Directory, "ca-key.pem");

    /// <summary>
    /// The authority kept in <paramref name="directory"/> (ca.pem and ca-key.pem), or a new one when
    /// there is none or it expires within a day.
    /// </summary>
    public static LocalCertificateAuthority OpenOrCreate(string directory, string name = "raftv local CA")
    {
        var certificateFile = Path.Combine(directory, "ca.pem");
        var keyFile = Path.Combine(directory, "ca-key.pem");
        if (File.Exists(certificateFile) && File.Exists(keyFile))
        {
            var certificate = X509CertificateLoader.LoadCertificateFromFile(certificateFile);
            if (certificate.NotAfter.ToUniversalTime() > DateTime.UtcNow.AddDays(1))
            {
                var key = ECDsa.Create();
                key.ImportFromPem(File.ReadAllText(keyFile));
                return new LocalCertificateAuthority(directory, certificate, key);
            }
            certificate.Dispose();
        }
        return Create(directory, name);
    }

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
        WritePrivate(authority.KeyFile, key.ExportPkcs8PrivateKeyPem());
        return authority;
    }

    /// <summary>
    /// NAME.pem and NAME-key.pem as <see cref="Issue"/> writes them, reused when they exist, were
    /// signed by this authority, name every address asked for and stay valid for another day.
    /// </summary>
    public TlsFiles Ensure(string name, bool clientCertAuth, IEnumerable<IPAddress>? addresses = null)
    {
        var wanted = new[] { IPAddress.Loopback }.Concat(addresses ?? []).Distinct().ToList();
        var certificateFile = Path.Combine(Directory, $"{name}.pem");
        var keyFile = Path.Combine(Directory, $"{name}-key.pem");
        if (File.Exists(certificateFile) && File.Exists(keyFile))
        {
            using var existing = X509CertificateLoader.LoadCertificateFromFile(certificateFile);
            var names = existing.Extensions.OfType<X509SubjectAlternativeNameExtension>().SelectMany(e => e.EnumerateIPAddresses()).ToHashSet();
            if (existing.Issuer == _certificate.Subject && existing.NotAfter.ToUniversalTime() > DateTime.UtcNow.AddDays(1)
                && wanted.All(names.Contains) && GrpcTlsChains(existing))
                return new TlsFiles(certificateFile, keyFile, CertificateFile, clientCertAuth);
        }
        return Issue(name, clientCertAuth, wanted);
    }

    private bool GrpcTlsChains(X509Certificate2 certificate) =>
        Raft.Transport.Grpc.Wire.GrpcTlsFiles.ChainsTo(certificate, [_certificate], out _);

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

/// <summary>
/// What 'raftv up --tls' runs a local cluster with, under one folder: a private authority, a
/// certificate per member (its peer endpoint requires peers' certificates from the authority; its
/// client endpoint serves TLS to any client), and a client certificate for etcdctl and raftv.
/// </summary>
public sealed record LocalClusterCertificates(string AuthorityFile, IReadOnlyDictionary<string, TlsFiles> Members, TlsFiles Client)
{
    /// <summary>Makes (or reuses) the files in <paramref name="directory"/> for members <paramref name="names"/> reached at <paramref name="host"/>.</summary>
    public static LocalClusterCertificates Prepare(string directory, IEnumerable<string> names, IPAddress host)
    {
        using var authority = LocalCertificateAuthority.OpenOrCreate(directory);
        var addresses = IPAddress.Any.Equals(host) || IPAddress.IPv6Any.Equals(host) ? [] : new[] { host };
        var members = names.ToDictionary(n => n, n => authority.Ensure(n, clientCertAuth: true, addresses));
        return new LocalClusterCertificates(authority.CertificateFile, members, authority.Ensure("client", clientCertAuth: false, addresses));
    }

    /// <summary>The flags of 'raftv node' (etcd's) that run member <paramref name="name"/> with mutual TLS between peers and TLS for clients.</summary>
    public IEnumerable<string> NodeArgs(string name)
    {
        var m = Members[name];
        return ["--cert-file", m.CertFile, "--key-file", m.KeyFile, "--trusted-ca-file", AuthorityFile,
            "--peer-cert-file", m.CertFile, "--peer-key-file", m.KeyFile, "--peer-trusted-ca-file", AuthorityFile, "--peer-client-cert-auth"];
    }

    /// <summary>etcdctl's (and raftv's client commands') flags to reach the cluster.</summary>
    public string ClientFlags => $"--cacert={AuthorityFile} --cert={Client.CertFile} --key={Client.KeyFile}";

    /// <summary><see cref="ClientFlags"/> of the files <see cref="Prepare"/> made in <paramref name="directory"/>.</summary>
    public static string ClientFlagsIn(string directory) =>
        $"--cacert={Path.Combine(directory, "ca.pem")} --cert={Path.Combine(directory, "client.pem")} --key={Path.Combine(directory, "client-key.pem")}";

    /// <summary>The client certificate for our own gRPC client.</summary>
    public Raft.Transport.Grpc.Wire.GrpcTlsFiles ClientGrpc => new(Client.CertFile, Client.KeyFile, AuthorityFile);
}
