using RetriKT.Evaluation;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Teacher;

namespace RetriKT.MLNet.Tests.Infrastructure;

/// <summary>The harness's real SST-2 stand-in teacher and real SST-2 sentences, for tests that need the teacher's own scores.</summary>
internal static class ShippedTeachers
{
    /// <summary>The SST-2 stand-in teacher committed with the harness, found and checked as the harness does.</summary>
    public static TeacherModel Sst2() => TeacherBuilder.LoadShipped(SharedData.RepoRoot, "SST-2").Teacher;

    /// <summary>The MRPC stand-in teacher committed with the harness (built without the second stage-A pass, <c>--teacher-steps-a2 0</c>).</summary>
    public static TeacherModel Mrpc() => TeacherBuilder.LoadShipped(SharedData.RepoRoot, "MRPC", new TeacherSettings { StageA2Steps = 0 }).Teacher;

    /// <summary>Sentences of different lengths from SST-2's official dev set, in file order.</summary>
    public static List<(string Text, string? Text2)> Sst2DevSentences(int count) =>
        TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(count).Select(r => (r.Text, (string?)null)).ToList();

    /// <summary>
    /// A store of the first <paramref name="count"/> sentences of SST-2's GLUE training split, soft-labelled by the shipped
    /// stand-in teacher (labels "0", "1"; each filed under the teacher's most probable label, as extraction files them).
    /// </summary>
    public static KnowledgeStore Sst2TeacherLabelledStore(int count)
    {
        var sentences = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "train.tsv")).Take(count).ToList();
        using var teacher = Sst2();
        var probabilities = new VerbalizerClassifier(teacher, TaskTemplates.Sst2, ["0", "1"]).Probabilities(sentences.Select(s => (s.Text, (string?)null)).ToList());
        return new KnowledgeStore(["0", "1"], sentences.Select((s, i) =>
            new KnowledgeEntry(s.Text, null, RetrievalMix.ArgMax(probabilities[i]), probabilities[i], probabilities[i].Max(), KnowledgeSource.Generated)));
    }
}
