using System.Security.Cryptography.X509Certificates;

namespace Raft.Transport.Grpc.Wire;

/// <summary>
/// PEM files for TLS: this end's certificate and private key (served by a server, presented by
/// a client), and the authority whose certificates this end trusts for the other end. With an
/// authority, only certificates it signed are trusted, not the system's store; without one
/// (<see cref="AuthorityPemPath"/> null) a client checks servers against the system's store.
/// A server with <see cref="RequireClientCertificate"/> (mutual TLS, as between the members of
/// a cluster) refuses every connection that does not present a certificate from the authority.
/// </summary>
public sealed record GrpcTlsFiles(string CertificatePemPath, string KeyPemPath, string? AuthorityPemPath, bool RequireClientCertificate = true)
{
    /// <summary>Throws with a clear message when a file is unset or missing.</summary>
    public void Validate()
    {
        foreach (var (what, path) in new[] { ("certificate", CertificatePemPath), ("private key", KeyPemPath), ("authority", AuthorityPemPath) })
        {
            if (path is null) continue;
            if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException($"TLS {what} file is not set");
            if (!File.Exists(path)) throw new ArgumentException($"TLS {what} file '{path}' does not exist");
        }
    }

    /// <summary>This end's certificate with its private key.</summary>
    public X509Certificate2 LoadCertificate()
    {
        using var pem = X509Certificate2.CreateFromPemFile(CertificatePemPath, KeyPemPath);
        // Re-imported through PKCS#12: a key loaded from PEM is ephemeral, which some TLS
        // stacks refuse for a server certificate.
        return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), password: null);
    }

    /// <summary>The authority certificates (the file may hold several), or null when none is set.</summary>
    public X509Certificate2Collection? LoadAuthorities()
    {
        if (AuthorityPemPath is null) return null;
        var authorities = new X509Certificate2Collection();
        authorities.ImportFromPemFile(AuthorityPemPath);
        if (authorities.Count == 0) throw new ArgumentException($"TLS authority file '{AuthorityPemPath}' holds no certificate");
        return authorities;
    }

    /// <summary>
    /// Whether <paramref name="certificate"/> chains to one of <paramref name="authorities"/>
    /// (and only those: the system store is not consulted). No revocation check: a cluster's
    /// private authority publishes no revocation lists.
    /// </summary>
    public static bool ChainsTo(X509Certificate2 certificate, X509Certificate2Collection authorities, out string reason)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(authorities);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        if (chain.Build(certificate))
        {
            reason = "";
            return true;
        }
        reason = string.Join("; ", chain.ChainStatus.Select(s => s.StatusInformation.Trim()));
        return false;
    }
}
