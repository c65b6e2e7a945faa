using RetriKT.MLNet.Common;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// Three writers (the tiny encoder's pretrainer, the harness's teacher and its tokenizer) replaced a finished folder by
/// deleting the old one in place and then moving the new one in: a stop during the recursive delete left a folder that
/// still looked finished (its done marker or config.json beside missing weights). AtomicFile.ReplaceDirectory renames
/// the old folder aside first.
/// </summary>
public class ReplaceDirectoryTests
{
    [Fact]
    public void TheNewFolderTakesTheOldOnesPlaceAndNothingIsLeftBeside()
    {
        using var root = new TempDir("retrikt-replace-dir-");
        var target = Path.Combine(root.Path, "teacher");
        Directory.CreateDirectory(target);
        File.WriteAllText(Path.Combine(target, "done.json"), "old");
        File.WriteAllText(Path.Combine(target, "only-in-old.bin"), "old");
        var finished = Path.Combine(root.Path, "teacher.tmp");
        Directory.CreateDirectory(finished);
        File.WriteAllText(Path.Combine(finished, "done.json"), "new");

        AtomicFile.ReplaceDirectory(finished, target + Path.DirectorySeparatorChar); // a trailing separator names the same folder
        Assert.Equal("new", File.ReadAllText(Path.Combine(target, "done.json")));
        Assert.False(File.Exists(Path.Combine(target, "only-in-old.bin")), "a file of the old folder survived the replacement");
        Assert.Equal([target], Directory.GetDirectories(root.Path));

        var fresh = Path.Combine(root.Path, "fresh");
        Directory.CreateDirectory(finished);
        AtomicFile.ReplaceDirectory(finished, fresh); // nothing to replace
        Assert.True(Directory.Exists(fresh));
    }

    [Fact]
    public void AFailedMoveLeavesTheOldFolderAsItWas()
    {
        using var root = new TempDir("retrikt-replace-dir-");
        var target = Path.Combine(root.Path, "tokenizer");
        Directory.CreateDirectory(target);
        File.WriteAllText(Path.Combine(target, "vocab.json"), "old");
        Assert.Throws<DirectoryNotFoundException>(() => AtomicFile.ReplaceDirectory(Path.Combine(root.Path, "missing.tmp"), target));
        Assert.Equal("old", File.ReadAllText(Path.Combine(target, "vocab.json")));
        Assert.Equal([target], Directory.GetDirectories(root.Path));
    }
}
