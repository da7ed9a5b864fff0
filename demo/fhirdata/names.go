package fhirdata

// Word lists for synthetic demographics. They are deliberately ordinary so
// the demo reads like a real chart, and combined at random so no entry is a
// real person.

var femaleGiven = []string{
	"Olivia", "Emma", "Ava", "Sophia", "Isabella", "Mia", "Amelia", "Harper", "Evelyn", "Abigail",
	"Emily", "Elizabeth", "Sofia", "Madison", "Avery", "Ella", "Scarlett", "Grace", "Chloe", "Victoria",
	"Riley", "Aria", "Lily", "Aubrey", "Zoey", "Penelope", "Layla", "Nora", "Camila", "Hannah",
	"Maria", "Rosa", "Mei", "Priya", "Fatima", "Ngozi", "Yuki", "Ana", "Leila", "Ingrid",
}

var maleGiven = []string{
	"Liam", "Noah", "William", "James", "Oliver", "Benjamin", "Elijah", "Lucas", "Mason", "Logan",
	"Alexander", "Ethan", "Jacob", "Michael", "Daniel", "Henry", "Jackson", "Sebastian", "Aiden", "Matthew",
	"Samuel", "David", "Joseph", "Carter", "Owen", "Wyatt", "John", "Jack", "Luke", "Jayden",
	"Carlos", "Wei", "Arjun", "Omar", "Kwame", "Hiroshi", "Mateo", "Dmitri", "Tariq", "Lars",
}

var familyNames = []string{
	"Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
	"Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
	"Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
	"Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
	"Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
	"Okafor", "Tanaka", "Patel", "Kowalski", "Haddad", "Johansson", "Chen", "Murphy", "O'Brien", "Novak",
}

var streetNames = []string{
	"Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Elm St", "Pine Rd", "Washington Ave", "Lake View Dr",
	"Hillside Ter", "River Rd", "Park Pl", "Chestnut St", "Highland Ave", "Sunset Blvd", "Church St", "Mill Rd",
}

type place struct{ city, postal string }

var places = []place{
	{"Springfield", "01103"}, {"Worcester", "01608"}, {"Lowell", "01852"}, {"Cambridge", "02139"},
	{"Quincy", "02169"}, {"Lynn", "01901"}, {"Newton", "02458"}, {"Somerville", "02143"},
	{"Framingham", "01702"}, {"Brockton", "02301"}, {"Salem", "01970"}, {"Pittsfield", "01201"},
}

var areaCodes = []string{"617", "508", "781", "978", "413", "339", "774", "857"}

type code struct{ system, code, display string }

type quantityKind struct {
	code     code
	unit     string
	ucum     string
	min, max float64
	decimals int
}

var labs = []quantityKind{
	{code{SystemLOINC, "2345-7", "Glucose [Mass/volume] in Serum or Plasma"}, "mg/dL", "mg/dL", 70, 180, 0},
	{code{SystemLOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"}, "%", "%", 4.6, 9.5, 1},
	{code{SystemLOINC, "718-7", "Hemoglobin [Mass/volume] in Blood"}, "g/dL", "g/dL", 11, 17, 1},
	{code{SystemLOINC, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma"}, "mg/dL", "mg/dL", 0.6, 1.6, 2},
	{code{SystemLOINC, "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma"}, "mg/dL", "mg/dL", 140, 260, 0},
	{code{SystemLOINC, "6690-2", "Leukocytes [#/volume] in Blood by Automated count"}, "10*3/uL", "10*3/uL", 4, 11, 1},
}

var chronic = []code{
	{SystemSNOMED, "38341003", "Hypertensive disorder"},
	{SystemSNOMED, "44054006", "Diabetes mellitus type 2"},
	{SystemSNOMED, "195967001", "Asthma"},
	{SystemSNOMED, "55822004", "Hyperlipidemia"},
	{SystemSNOMED, "396275006", "Osteoarthritis"},
	{SystemSNOMED, "13645005", "Chronic obstructive lung disease"},
}
