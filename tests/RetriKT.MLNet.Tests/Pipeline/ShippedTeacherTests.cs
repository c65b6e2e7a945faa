using System.Text.Json;
using RetriKT.Evaluation;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Pipeline;

/// <summary>
/// The harness uses a teacher committed with the repository in place of building one, only when its weights are the
/// ones its build record names (a real checkpoint, stories260K, stands in for the shipped teacher).
/// </summary>
public sealed class ShippedTeacherTests : IDisposable
{
    private readonly TempDir _folder = new("retrikt-shipped-");
    private string Temp => _folder.Path;

    public void Dispose() => _folder.Dispose();

    private static readonly TeacherSettings Settings = new();

    /// <summary>Copies the real checkpoint into the shipped layout of SST-2's default settings with a build record of <paramref name="recordedHash"/>.</summary>
    private string Ship(string recordedHash)
    {
        var folder = Path.Combine(Temp, $"teacher-SST-2-{Settings.CacheKey("SST-2")}", "teacher-" + Settings.TeacherKey());
        Directory.CreateDirectory(folder);
        foreach (var file in Directory.GetFiles(SharedData.Path("models", "llama2c-stories260K-hf")))
            File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
        File.WriteAllText(Path.Combine(folder, "done.json"), JsonSerializer.Serialize(new { task = "SST-2", contentHash = recordedHash }));
        return folder;
    }

    private static string HashOfRealCheckpoint()
    {
        using var model = TeacherModel.Load(SharedData.Path("models", "llama2c-stories260K-hf"));
        return model.ContentHash;
    }

    /// <summary>
    /// The teachers committed with the repository are found under the settings the table's rows ran with (MRPC, RTE and
    /// CB without the second stage-A pass) and their weights are the ones every row of their task was measured with
    /// (CB's also BoolQ's, given with --teacher).
    /// </summary>
    [Theory]
    [InlineData("SST-2", 1500, "bad432e0b06ccde9")]
    [InlineData("MRPC", 0, "55d191a668648ff3")]
    [InlineData("RTE", 0, "3f58d55f29474097")]
    [InlineData("CB", 0, "03e3841fd5021738")]
    public void TheRepositorysShippedTeachersAreTheTablesTeachers(string task, int stageA2Steps, string hash)
    {
        var (teacher, folder) = TeacherBuilder.LoadShipped(SharedData.RepoRoot, task, new TeacherSettings { StageA2Steps = stageA2Steps });
        using (teacher)
        {
            Assert.StartsWith(hash, teacher.ContentHash);
            Assert.Equal(5_795_072, teacher.ParameterCount);
            Assert.StartsWith(TeacherBuilder.ShippedRoot(SharedData.RepoRoot), folder);
        }
    }

    [SharedDataFact]
    public void AShippedTeacherIsUsedInsteadOfABuildAndAnotherTasksIsNot()
    {
        var folder = Ship(HashOfRealCheckpoint());
        var log = new List<string>();
        // The cache root does not exist: finding the shipped teacher must not build, or even look there.
        var path = TeacherBuilder.EnsureBuilt(SharedData.Path("data"), Path.Combine(Temp, "no-cache"), "SST-2", Settings, log.Add, CancellationToken.None, Temp);
        Assert.Equal(folder, path);
        Assert.Contains(log, l => l.Contains("shipped with the repository", StringComparison.Ordinal));
        Assert.False(Directory.Exists(Path.Combine(Temp, "no-cache")));
        // Another recipe or task has another folder: nothing shipped for it.
        Assert.Null(TeacherBuilder.FindShipped(Temp, "RTE", Settings));
        Assert.Null(TeacherBuilder.FindShipped(Temp, "SST-2", Settings with { StageBSteps = 601 }));
        // LoadShipped needs one: under a repository without shipped teachers it names the folder it looked in.
        var missing = Assert.Throws<InvalidOperationException>(() => TeacherBuilder.LoadShipped(Temp, "SST-2", Settings));
        Assert.Equal($"No shipped SST-2 teacher under {TeacherBuilder.ShippedRoot(Temp)}.", missing.Message);
    }

    [SharedDataFact]
    public void DamagedWeightsAreRefusedNamingTheFolder()
    {
        var folder = Ship(HashOfRealCheckpoint());
        var weights = Path.Combine(folder, "model.safetensors");
        var bytes = File.ReadAllBytes(weights);
        bytes[^8] ^= 0x40; // one bit of the last tensor's last value
        File.WriteAllBytes(weights, bytes);
        var e = Assert.Throws<InvalidDataException>(() => TeacherBuilder.FindShipped(Temp, "SST-2", Settings));
        Assert.Contains(folder, e.Message);
        Assert.Contains("damaged", e.Message);

        // A truncated file (what a partial copy or an LFS pointer leaves) fails to load: same exception, same folder.
        File.WriteAllText(weights, "version https://git-lfs.github.com/spec/v1\n");
        var truncated = Assert.Throws<InvalidDataException>(() => TeacherBuilder.FindShipped(Temp, "SST-2", Settings));
        Assert.StartsWith(folder, truncated.Message);
    }

    [SharedDataFact]
    public void ABuildRecordWithoutAHashIsRefused()
    {
        var folder = Ship("");
        var e = Assert.Throws<InvalidDataException>(() => TeacherBuilder.FindShipped(Temp, "SST-2", Settings));
        Assert.Contains(Path.Combine(folder, "done.json"), e.Message);
    }
}
