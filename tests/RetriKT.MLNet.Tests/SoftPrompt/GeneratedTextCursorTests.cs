using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.SoftPrompt;

/// <summary>
/// An IDataView gives a row the same values through every cursor. The soft prompts' Transform seeded each row's
/// generation by the cursor's position, so a shuffled cursor (as a trainer that shuffles reads its data, epoch after
/// epoch) gave a row another row's seed and another GeneratedText than an unshuffled cursor gave it.
/// </summary>
public sealed class GeneratedTextCursorTests
{
    private sealed class Row
    {
        public string Id { get; set; } = "";
        public string Label { get; set; } = "";
    }

    [SharedDataFact]
    public void AShuffledCursorGivesEachRowTheTextAnUnshuffledOneGivesIt()
    {
        var mlContext = new MLContext(seed: 5);
        using var prompts = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = SoftPromptPpoTrainerTests.Stories260K, Template = SoftPromptPpoTrainerTests.StoryMood, SupervisedEpochs = 1, PpoSteps = 0, PromptTokens = 2,
        }).Fit(SoftPromptPpoTrainerTests.StoryData(mlContext));
        var rows = Enumerable.Range(0, 6).Select(i => new Row { Id = $"row{i}", Label = i % 2 == 0 ? "happy" : "sad" }).ToArray();
        // Cached, as a pipeline's AppendCacheCheckpoint caches: a view that can shuffle.
        var generated = prompts.Transform(mlContext.Data.Cache(mlContext.Data.LoadFromEnumerable(rows)));

        var inOrder = Read(generated, null);
        Assert.Equal(rows.Select(r => r.Id), inOrder.Keys);
        Assert.True(inOrder.Values.Distinct().Count() > 1, "precondition: the rows' generations differ");
        var shuffled = Read(generated, new Random(7));
        Assert.Equal(inOrder, shuffled);
    }

    private static Dictionary<string, string> Read(IDataView data, Random? shuffle)
    {
        var id = data.Schema["Id"];
        var text = data.Schema["GeneratedText"];
        using var cursor = data.GetRowCursor([id, text], shuffle);
        var getId = cursor.GetGetter<ReadOnlyMemory<char>>(id);
        var getText = cursor.GetGetter<ReadOnlyMemory<char>>(text);
        ReadOnlyMemory<char> a = default, b = default;
        var read = new Dictionary<string, string>();
        var order = new List<string>();
        while (cursor.MoveNext())
        {
            getId(ref a);
            getText(ref b);
            read[a.ToString()] = b.ToString();
            order.Add(a.ToString());
        }
        if (shuffle is not null) Assert.NotEqual(read.Keys.Order(), order); // the cursor did shuffle
        return read;
    }
}
