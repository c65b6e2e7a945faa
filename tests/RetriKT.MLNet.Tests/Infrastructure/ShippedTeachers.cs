using RetriKT.Evaluation;
using RetriKT.MLNet.Teacher;

namespace RetriKT.MLNet.Tests.Infrastructure;

/// <summary>The harness's real SST-2 stand-in teacher and real SST-2 sentences, for tests that need the teacher's own scores.</summary>
internal static class ShippedTeachers
{
    /// <summary>The SST-2 stand-in teacher committed with the harness, found and checked as the harness does.</summary>
    public static TeacherModel Sst2() => TeacherBuilder.LoadShipped(SharedData.RepoRoot, "SST-2").Teacher;

    /// <summary>Sentences of different lengths from SST-2's official dev set, in file order.</summary>
    public static List<(string Text, string? Text2)> Sst2DevSentences(int count) =>
        TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(count).Select(r => (r.Text, (string?)null)).ToList();
}
