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

    /// <summary>Path under the shared folder; throws when it is absent (tests guard with <see cref="SharedDataFactAttribute"/>).</summary>
    public static string Path(params string[] parts)
    {
        var root = Root ?? throw new InvalidOperationException("The shared folder (../shared) is not present.");
        var path = System.IO.Path.Combine([root, .. parts]);
        if (!File.Exists(path) && !Directory.Exists(path))
            throw new FileNotFoundException($"Expected shared file is missing: {path}", path);
        return path;
    }

    private static string? Find()
    {
        var fromEnv = Environment.GetEnvironmentVariable("RETRIKT_SHARED");
        if (!string.IsNullOrEmpty(fromEnv)) return Directory.Exists(fromEnv) ? System.IO.Path.GetFullPath(fromEnv) : null;
        var candidate = System.IO.Path.GetFullPath(System.IO.Path.Combine(RepoRoot, "..", "shared"));
        return Directory.Exists(candidate) ? candidate : null;
    }
}

/// <summary>
/// A fact that needs the shared folder: skipped with a stated reason when it is absent on a developer machine, but
/// never skipped in CI (CI=true), where its absence must fail the run.
/// </summary>
public sealed class SharedDataFactAttribute : FactAttribute
{
    public SharedDataFactAttribute()
    {
        if (SharedData.Root is null && !IsCi)
            Skip = "Needs ../shared (real data and checkpoints) beside the repository; set RETRIKT_SHARED to point elsewhere.";
    }

    internal static bool IsCi => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);
}
