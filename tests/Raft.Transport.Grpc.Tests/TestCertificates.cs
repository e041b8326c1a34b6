using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Raft.Transport.Grpc.Wire;

namespace Raft.Transport.Grpc.Tests;

/// <summary>
/// Certificate authorities and leaf certificates made at test time and written as PEM files
/// in a temporary folder (removed on dispose): nothing secret is ever committed.
/// </summary>
public sealed class TestCertificates : IDisposable
{
    private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("raftv-grpc-tls-");

    public sealed record Authority(string Name, X509Certificate2 Certificate, ECDsa Key, string PemPath);

    public Authority CreateAuthority(string name)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        var path = Path.Combine(_folder.FullName, $"{name}.ca.pem");
        File.WriteAllText(path, certificate.ExportCertificatePem());
        return new Authority(name, certificate, key, path);
    }

    /// <summary>
    /// A certificate for 127.0.0.1 and localhost signed by <paramref name="issuer"/>; its PEM
    /// files are paired with <paramref name="trusted"/>, the authority this end trusts for its peers.
    /// </summary>
    public GrpcTlsFiles Issue(Authority issuer, string name, Authority trusted)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            new OidCollection { new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2") }, false));
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(issuer.Certificate, true, false));
        var serial = BitConverter.GetBytes(DateTime.UtcNow.Ticks);
        using var certificate = request.Create(issuer.Certificate.SubjectName, X509SignatureGenerator.CreateForECDsa(issuer.Key),
            DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddHours(12), serial);
        var certificatePath = Path.Combine(_folder.FullName, $"{name}.pem");
        var keyPath = Path.Combine(_folder.FullName, $"{name}.key.pem");
        File.WriteAllText(certificatePath, certificate.ExportCertificatePem());
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem());
        return new GrpcTlsFiles(certificatePath, keyPath, trusted.PemPath);
    }

    public void Dispose() => _folder.Delete(recursive: true);
}
