using Microsoft.ML;                                        // the README's usings, and only those, bring the example's names
using RetriKT.MLNet;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Teacher;

// Outside RetriKT.MLNet on purpose: an enclosing RetriKT.MLNet namespace would bring names the README's usings do not.
namespace ReadmeUsers;

/// <summary>
/// The README's "Use it" example is compiled here, so an API change that breaks it breaks the build, and the test
/// checks that README.md still shows this code. It is not run here (2,048 samples per label take minutes);
/// docs/evaluation/probes/readme-example runs it on SST-2 and RESULTS.md has what it gives.
/// </summary>
public class ReadmeExampleTests
{
    private const string Begin = "// README 'Use it' begins", End = "// README 'Use it' ends";

    [System.Diagnostics.CodeAnalysis.SuppressMessage("CodeQuality", "IDE0051", Justification = "compiled, not run")]
    private static void UseIt(IDataView fewShot, IDataView test)
    {
        // README 'Use it' begins
        var ml = new MLContext(seed: 1);

        // 1–2. soft prompts for a frozen teacher (supervised, then PPO)
        var prompts = ml.RetriKT().SoftPromptPpoTrainer(teacherPath: "models/llama", template: TaskTemplates.Sst2).Fit(fewShot);
        // 3. knowledge store, as data (Text, Text2, Label, SoftLabel, Fidelity, Source): generated samples with the
        //    teacher's soft labels + the few-shot examples; save, inspect or filter it like any IDataView
        IDataView store = ml.RetriKT().KnowledgeExtractor(prompts, samplesPerLabel: 2048).Fit(fewShot).ToDataView(ml);
        // 4. the tiny student that retrieves from the store. It starts from the teacher's vocabulary and token embeddings
        //    (factored to rank 16, so it stays under 2 % of a 5.8M-parameter teacher) and holds out a tenth of the store to
        //    choose its epoch and its mix of head and retrieval.
        using var teacher = TeacherModel.Load("models/llama");
        var vocabulary = TeacherTokenVocabulary.Export(teacher, "student-vocabulary");
        var keys = ml.Transforms.Conversion.MapValueToKey("Label").Fit(fewShot);
        var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            StoreData = store, VocabularyPath = vocabulary.VocabularyPath, TokenEmbeddingsPath = vocabulary.EmbeddingsPath, EmbeddingRank = 16,
        }).Fit(keys.Transform(fewShot));
        var metrics = ml.MulticlassClassification.Evaluate(student.Transform(keys.Transform(test)));
        ml.Model.SaveAtomically(student, fewShot.Schema, "model.zip"); // no LLM inside; load with ml.Model.LoadVerified anywhere
        // README 'Use it' ends
    }

    [Fact]
    public void TheReadmeShowsTheCompiledExample()
    {
        string root = RetriKT.MLNet.Tests.Infrastructure.SharedData.RepoRoot;
        var readme = File.ReadAllLines(Path.Combine(root, "README.md"));
        int section = Array.IndexOf(readme, "## Use it");
        Assert.True(section >= 0, "README.md has no '## Use it' section");
        int open = Array.IndexOf(readme, "```csharp", section), close = Array.IndexOf(readme, "```", open + 1);
        var block = readme[(open + 1)..close];
        var shown = Significant(block.Where(l => !IsUsingDirective(l) && !l.StartsWith("IDataView fewShot = ...;", StringComparison.Ordinal)));

        var source = File.ReadAllLines(Path.Combine(root, "tests", "RetriKT.MLNet.Tests", "FirstRun", "ReadmeExampleTests.cs"));
        int from = Array.FindIndex(source, l => l.Trim() == Begin), to = Array.FindIndex(source, l => l.Trim() == End);
        Assert.Equal(shown, Significant(source[(from + 1)..to]));

        // The README's usings are the ones this file compiles with.
        var usings = block.Where(IsUsingDirective).Select(l => l.Split(';')[0]).ToList();
        Assert.Equal(usings, source.Where(IsUsingDirective).Select(l => l.Split(';')[0]));
    }

    private static bool IsUsingDirective(string line) => line.StartsWith("using ", StringComparison.Ordinal) && !line.StartsWith("using var ", StringComparison.Ordinal);

    /// <summary>The lines that say something, trimmed, with trailing comments' spacing made uniform.</summary>
    private static List<string> Significant(IEnumerable<string> lines) =>
        lines.Select(l => System.Text.RegularExpressions.Regex.Replace(l.Trim(), @"\s+//", " //")).Where(l => l.Length > 0).ToList();
}
