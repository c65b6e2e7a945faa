namespace RetriKT.MLNet.Tests.Infrastructure;

/// <summary>
/// A file that exists and cannot be read (as a file without read permission is to its user), for the paths that must turn
/// <see cref="UnauthorizedAccessException"/> into one line. The tests run as root too, which reads past any permission bits,
/// so the file is a link to a kernel setting that is write-only for root as well.
/// </summary>
public static class UnreadableFile
{
    private const string WriteOnly = "/proc/sys/vm/compact_memory";

    /// <summary>Creates <paramref name="path"/> (and its folder) as such a file.</summary>
    public static void Create(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.CreateSymbolicLink(path, WriteOnly);
        Assert.True(File.Exists(path), $"{WriteOnly} is not here; this test needs a Linux kernel's /proc/sys");
        Assert.Throws<UnauthorizedAccessException>(() => File.ReadAllBytes(path));
    }
}
