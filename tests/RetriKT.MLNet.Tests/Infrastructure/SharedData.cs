namespace RetriKT.MLNet.Tests.Infrastructure;

/// <summary>
/// Locates the workplace's shared folder (real data and checkpoints): <c>RETRIKT_SHARED</c>, else <c>../shared</c>
/// beside the repository root. The project never copies these files in.
/// </summary>
public static class SharedData
{
    private static readonly Lazy<string?> _root = new(Find);

    /// <summary>Absolute path of the shared folder, or null when it is absent.</summary>
    public static string? Root => _root.Value;

    /// <summary>The repository root (the folder holding RetriKT.MLNet.sln).</summary>
    public static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(System.IO.Path.Combine(dir.FullName, "RetriKT.MLNet.sln"))) return dir.FullName;
            throw new InvalidOperationException($"RetriKT.MLNet.sln not found above {AppContext.BaseDirectory}.");
        }
    }

    /// <summary>Path under the shared folder; throws, naming where it looked, when it is absent (tests that need it carry <see cref="SharedDataFactAttribute"/>).</summary>
    public static string Path(params string[] parts)
    {
        var root = Root ?? throw new InvalidOperationException(Environment.GetEnvironmentVariable("RETRIKT_SHARED") is { Length: > 0 } fromEnv
            ? $"The shared folder of real data and checkpoints is not present: RETRIKT_SHARED names '{fromEnv}', which does not exist."
            : $"The shared folder of real data and checkpoints is not present at '{BesideRepo}' (or set RETRIKT_SHARED).");
        var path = System.IO.Path.Combine([root, .. parts]);
        if (!File.Exists(path) && !Directory.Exists(path))
            throw new FileNotFoundException($"Expected shared file is missing: {path}", path);
        return path;
    }

    /// <summary>Where the shared folder is looked for without RETRIKT_SHARED: <c>../shared</c> beside the repository.</summary>
    private static string BesideRepo => System.IO.Path.GetFullPath(System.IO.Path.Combine(RepoRoot, "..", "shared"));

    private static string? Find()
    {
        var fromEnv = Environment.GetEnvironmentVariable("RETRIKT_SHARED");
        if (!string.IsNullOrEmpty(fromEnv)) return Directory.Exists(fromEnv) ? System.IO.Path.GetFullPath(fromEnv) : null;
        return Directory.Exists(BesideRepo) ? BesideRepo : null;
    }
}

/// <summary>
/// Marks a fact that reads the shared folder (real data and checkpoints). It is never skipped: where the folder is
/// absent the test fails through <see cref="SharedData.Path"/>, with one line naming where it was looked for.
/// </summary>
public sealed class SharedDataFactAttribute : FactAttribute;

/// <summary>A theory that reads the shared folder: <see cref="SharedDataFactAttribute"/> for data rows.</summary>
public sealed class SharedDataTheoryAttribute : TheoryAttribute;
