using Google.Protobuf;

namespace Raft.Transport.Grpc.Wire;

/// <summary>The four shapes of a gRPC method.</summary>
public enum GrpcMethodType
{
    Unary,
    ClientStreaming,
    ServerStreaming,
    DuplexStreaming,
}

/// <summary>Turns messages into bytes and back. Deserialize throws on malformed input.</summary>
public sealed record GrpcMarshaller<T>(Func<T, byte[]> Serialize, Func<byte[], T> Deserialize);

public static class GrpcMarshaller
{
    /// <summary>The marshaller of a protobuf message class.</summary>
    public static GrpcMarshaller<T> Protobuf<T>(MessageParser<T> parser) where T : IMessage<T> =>
        new(message => message.ToByteArray(), bytes => parser.ParseFrom(bytes));
}

/// <summary>
/// A method as both ends know it: its full name ("/package.Service/Method"), its shape and
/// how its request and response messages are encoded.
/// </summary>
public sealed record GrpcMethod<TRequest, TResponse>(
    GrpcMethodType Type,
    string FullName,
    GrpcMarshaller<TRequest> RequestMarshaller,
    GrpcMarshaller<TResponse> ResponseMarshaller)
{
    public string FullName { get; } = ValidName(FullName);

    private static string ValidName(string name)
    {
        var slash = name.LastIndexOf('/');
        if (!name.StartsWith('/') || slash <= 1 || slash == name.Length - 1)
            throw new ArgumentException($"gRPC method name '{name}' is not of the form /package.Service/Method", nameof(FullName));
        return name;
    }
}

public static class GrpcMethod
{
    /// <summary>A method whose messages are protobuf classes.</summary>
    public static GrpcMethod<TRequest, TResponse> Protobuf<TRequest, TResponse>(
        GrpcMethodType type, string service, string method, MessageParser<TRequest> request, MessageParser<TResponse> response)
        where TRequest : IMessage<TRequest>
        where TResponse : IMessage<TResponse> =>
        new(type, $"/{service}/{method}", GrpcMarshaller.Protobuf(request), GrpcMarshaller.Protobuf(response));
}
