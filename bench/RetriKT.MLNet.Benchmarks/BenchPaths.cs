namespace RetriKT.MLNet.Benchmarks;

/// <summary>Where the benchmarks find the repository and the shared data and models beside it.</summary>
public static class BenchPaths
{
    /// <summary>
    /// The folder holding RetriKT.MLNet.sln, above the working directory first (a benchmark built into another output
    /// folder with -o is run from the repository), then above the benchmark's own folder.
    /// </summary>
    public static string RepoRoot()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "RetriKT.MLNet.sln"))) return dir.FullName;
        throw new InvalidOperationException("RetriKT.MLNet.sln not found above the working directory or the benchmark's folder; run from the repository or set RETRIKT_SHARED.");
    }

    /// <summary>The shared data and models: RETRIKT_SHARED, else <c>../shared</c> beside the repository.</summary>
    public static string SharedRoot() =>
        Environment.GetEnvironmentVariable("RETRIKT_SHARED") is { Length: > 0 } shared ? shared : Path.Combine(RepoRoot(), "..", "shared");
}
