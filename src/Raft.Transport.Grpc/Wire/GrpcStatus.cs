using System.Globalization;
using System.Text;

namespace Raft.Transport.Grpc.Wire;

/// <summary>gRPC's status codes (grpc/doc/statuscodes.md), with their wire numbers.</summary>
public enum StatusCode
{
    OK = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// <summary>
/// A call ended with a status other than OK. Thrown by the client for the status the server
/// (or the local deadline, cancellation or transport) gave; thrown by a server handler to end
/// its call with that status.
/// </summary>
public sealed class GrpcCallException(StatusCode statusCode, string message, Exception? innerException = null)
    : Exception($"{statusCode}: {message}", innerException)
{
    public StatusCode StatusCode { get; } = statusCode;

    /// <summary>The status message alone, as sent in grpc-message.</summary>
    public string StatusMessage { get; } = message;
}

/// <summary>The grpc-status and grpc-message headers.</summary>
public static class GrpcStatusHeaders
{
    public const string Status = "grpc-status";
    public const string Message = "grpc-message";

    /// <summary>
    /// grpc-message is percent-encoded UTF-8: bytes outside printable ASCII, and '%' itself,
    /// become %XX, so any text survives HTTP/2 header rules.
    /// </summary>
    public static string EncodeMessage(string message)
    {
        var bytes = Encoding.UTF8.GetBytes(message);
        var text = new StringBuilder(bytes.Length);
        foreach (var b in bytes)
        {
            if (b >= 0x20 && b <= 0x7E && b != (byte)'%') text.Append((char)b);
            else text.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
        }
        return text.ToString();
    }

    /// <summary>Decodes grpc-message; a '%' not followed by two hex digits is kept as it is, as the spec asks.</summary>
    public static string DecodeMessage(string encoded)
    {
        if (!encoded.Contains('%')) return encoded;
        var bytes = new List<byte>(encoded.Length);
        var i = 0;
        while (i < encoded.Length)
        {
            if (encoded[i] == '%' && i + 2 < encoded.Length
                && byte.TryParse(encoded.AsSpan(i + 1, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var b))
            {
                bytes.Add(b);
                i += 3;
                continue;
            }
            // A run of plain text up to the next '%', kept whole so surrogate pairs stay together.
            var next = encoded.IndexOf('%', i + 1);
            if (next < 0) next = encoded.Length;
            bytes.AddRange(Encoding.UTF8.GetBytes(encoded[i..next]));
            i = next;
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <summary>Reads a grpc-status value; null when it is not a number.</summary>
    public static StatusCode? ParseStatus(string? value) =>
        int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var code) ? (StatusCode)code : null;
}
