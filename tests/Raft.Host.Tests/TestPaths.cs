namespace Raft.Host.Tests;

internal static class TestPaths
{
    /// <summary>
    /// The repository's root (the directory of RaftVerified.sln): above the test binaries, or above
    /// this source file when the binaries were built outside the tree (--artifacts-path).
    /// </summary>
    public static string RepositoryRoot([System.Runtime.CompilerServices.CallerFilePath] string sourceFile = "")
    {
        static DirectoryInfo? SolutionAbove(string? start)
        {
            var dir = start is null ? null : new DirectoryInfo(start);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "RaftVerified.sln"))) dir = dir.Parent;
            return dir;
        }
        var root = SolutionAbove(AppContext.BaseDirectory) ?? SolutionAbove(Path.GetDirectoryName(sourceFile));
        Assert.True(root is not null, "no RaftVerified.sln above the test binaries or the test sources");
        return root!.FullName;
    }
}
